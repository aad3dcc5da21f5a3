{
  "targets": [
    {
      "target_name": "ganfleet_native",
      "sources": ["gemm.c", "adam.c", "half.c", "pixels.c", "binding.c"],
      "cflags": ["-O2", "-std=gnu11", "-ffp-contract=off"],
      "xcode_settings": { "OTHER_CFLAGS": ["-O2", "-ffp-contract=off"] }
    }
  ]
}
