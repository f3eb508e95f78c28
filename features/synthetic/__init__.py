"""The synthetic world: a generated CRM + social customer base with its known truth (world.py)."""
