"""Stands for an installed package whose native library does not load."""

raise ImportError("libonnxruntime_providers_shared.so: cannot open shared object file: "
                  "No such file or directory")
