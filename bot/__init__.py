"""The edges of steward: channels, the app that wires everything, the CLI, the scheduler."""
