"""How a codec's streaming steps run on CPU, apart from the models and from the codec's API.

- `backends`: the one table of backends (native, torch, eager), their fall-backs and precisions
  (`names`: their names, for the command lines, without torch).
- `per_shape`: the frame of a step compiled once per chunk shape.
- `torchscript`: that step as a TorchScript graph.
- `native`, `native_build`: that step as a plan of the native C engine, and the engine's build.
- `cpu_process`: the process around them: allocator re-exec, OpenMP worker pools (imports no torch,
  so that a CLI can call it before its heavy imports).
"""
