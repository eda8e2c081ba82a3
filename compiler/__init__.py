"""Front ends (prototxt, .net), the graph IR, layer definitions and analysis passes."""
