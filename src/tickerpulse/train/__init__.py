"""Fine-tuning: configs, data collation (masking, packing), the training loop and its backends."""
