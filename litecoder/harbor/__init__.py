"""The Harbor adapter: everything litecoder knows about Harbor lives here.

- `taskdir`: the task-dir format (layout, task.toml through Harbor's TaskConfig, metadata,
  Dockerfile checks, content hash)
- `compose`: the compose file litecoder writes into every task, and the check of anyone else's
- `runner`: one JobConfig builder, staging (confined image builds, litecoder's compose file),
  running Harbor (progress, sanitizing what trials copy out, limits watch, cleanup), results
  as Harbor's own TrialResult models and the reward read in one place
"""
