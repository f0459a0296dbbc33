"""svrl_trainer."""
