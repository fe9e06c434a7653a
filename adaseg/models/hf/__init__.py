"""Import of trained weights from Hugging Face transformers' Mask2Former and timm backbones:
config translation (:mod:`.config`), the parameter-name map (:mod:`.mapping`) and the
loaders (:mod:`.importer`)."""
