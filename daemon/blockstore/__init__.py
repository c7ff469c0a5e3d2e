"""Block stores and pinners: the swappable storage backends (see base.py)."""
