"""Fuzzing of every reader of user files: seeded mutators and a campaign runner (see campaign.py)."""
