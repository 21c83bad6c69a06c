"""The coordinator: process definitions, the engine that runs them, and chat routing."""
