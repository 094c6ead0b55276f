"""Environment synthesis: accepted tasks -> validated Harbor task directories.

- `agent`: the small agent loop the steps run (JSON actions: run, write_file, finish)
- `executors`: where its actions land (a container, or a part of the task dir)
- `capture`: the setup container's final state as build-context files
- `steps`: refine, setup, solution, verifier, config
- `validate`: static checks, the build, start state fails, solution passes, Harbor's oracle
- `prepare`: one task through all of it, committed to a resumable work area
"""
