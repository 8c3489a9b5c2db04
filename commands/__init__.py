"""The command groups of `cp-plan`, one module each; cli.py assembles them into the app."""
