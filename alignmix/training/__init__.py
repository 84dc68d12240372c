"""QLoRA SFT and DPO on a mix's shards, with metrics and a model card."""
