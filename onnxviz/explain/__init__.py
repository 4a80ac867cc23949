"""Where a network looks and what its filters respond to: gradients, saliency, patterns.

* :mod:`.gradients`: the one entry point to gradients (:func:`~.gradients.gradients`);
* :mod:`.saliency`: gradient, SmoothGrad, Integrated Gradients, guided backprop;
* :mod:`.patterns`: gradient ascent on the input (the Keras example's loop, batched).
"""
