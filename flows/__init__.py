"""Flows that wire the stage tasks, the command line, and deployment entrypoints."""
