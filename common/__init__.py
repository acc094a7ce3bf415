"""Plumbing every app may use: the bottom layer, below ``businesses`` (it imports no app of the project)."""
