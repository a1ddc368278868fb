"""Shared math of both methods: correlation, affine geometry and cropping, backbones; the method contract."""
