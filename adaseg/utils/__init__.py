"""Process runtime: torch.distributed helpers, progress and the run log, interrupt handling."""
