"""Growth where training is distributed (docs/distributed.md): DCP checkpoints in and out
with optimizer state, torchrun-split conversion, and `grow` on FSDP2 models in-job.
torch.distributed is the engine; nothing here is imported unless one of these is used."""
