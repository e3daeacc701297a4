"""The application: the session, the enforcer, the runtime, the CLI on top."""
