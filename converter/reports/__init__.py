"""What a build tells a person: report.json, report.html, the terminal summary, the per-layer
comparison with ONNX Runtime, two builds side by side."""
