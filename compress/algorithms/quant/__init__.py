"""Weight quantization on a symmetric per-group integer grid (zero exact), and the record of
the grid a quantized folder keeps beside its weights."""
