"""Rules training and serving must agree on, torch-free: the model card and the model store."""
