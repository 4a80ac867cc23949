"""Everything that reads or rewrites ONNX: no onnxruntime, no drawing.

Modules, bottom up (each imports only those above it):

* :mod:`.index`: typed lookups built once (producers, consumers, initializers, attributes);
* :mod:`.wire`: read a model without its weight bytes;
* :mod:`.chain`: the feature-map rule (conv → bias/norm/activation regions);
* :mod:`.fold`: a tensor computed from constants, folded once by onnx's reference evaluator;
* :mod:`.weights`: a weight wherever it hides (the fast path in numpy, else :mod:`.fold`);
* :mod:`.names`: friendly names, one rule per exporter;
* :mod:`.inputs`: which input takes the image, its layout and size;
* :mod:`.shapes`: shape inference;
* :mod:`.rewrite`: expose / prune / uint8 activations, returning new models.

Every function here returns new data and never mutates the model it is given.
"""
