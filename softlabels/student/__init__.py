"""Students: streaming soft-label datasets, distillation losses and training loops."""
