"""Models in and out of memory: loading (Hub, folder, GGUF, Meta format), the block adapter,
fused experts, the library-stack differences, device maps and onloading, the pre-run plan."""
