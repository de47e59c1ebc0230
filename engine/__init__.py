"""stepforge engine: token layout, instructions, spec expansion, teachers, codec, synthesize job."""
__version__ = "0.1.0"
