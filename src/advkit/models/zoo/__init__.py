"""Architectures written in plain torch for 1x28x28 and 3x32x32 inputs."""
