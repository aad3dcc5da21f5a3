{
  "targets": [
    {
      "target_name": "ganfleet_gemm",
      "sources": ["gemm.c", "binding.c"],
      "cflags": ["-O2", "-std=gnu11"],
      "xcode_settings": { "OTHER_CFLAGS": ["-O2"] }
    }
  ]
}
