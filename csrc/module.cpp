// Makes the extension importable as the Python module `adaseg._C`. Importing it loads the
// shared library, whose static initialisers (TORCH_LIBRARY / TORCH_LIBRARY_IMPL) register
// the ops with PyTorch's dispatcher as torch.ops.adaseg.*; the module itself only tells
// Python which kernels were compiled in. Not part of the CMake build (that library is
// loaded with torch.ops.load_library and needs no Python module).
#include <Python.h>

namespace {

PyModuleDef adaseg_c_module = {
    PyModuleDef_HEAD_INIT,
    "_C",
    "adaseg's compiled ops; importing registers torch.ops.adaseg.ms_deform_attn and "
    "torch.ops.adaseg.ms_deform_attn_backward.",
    -1,
    nullptr,
};

}  // namespace

extern "C" PyMODINIT_FUNC PyInit__C(void) {
  PyObject* module = PyModule_Create(&adaseg_c_module);
  if (module == nullptr) return nullptr;
#ifdef WITH_CUDA
  const long with_cuda = 1;
#else
  const long with_cuda = 0;
#endif
  // 1 when the CUDA kernels were compiled in (torch with CUDA and nvcc at build time).
  if (PyModule_AddIntConstant(module, "with_cuda", with_cuda) != 0) {
    Py_DECREF(module);
    return nullptr;
  }
  return module;
}
