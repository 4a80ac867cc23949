"""Where a network looks and what its filters respond to: CAMs, gradients, saliency, patterns.

* :mod:`.cam`: class activation maps, the one entry point (:func:`~.cam.cam`) over
  :mod:`.base` and one small file per method: :mod:`.eigen`, :mod:`.score`, :mod:`.ablation`
  (forward only), :mod:`.grad`, :mod:`.gradpp`, :mod:`.xgrad`, :mod:`.layer`, :mod:`.hires`
  (through gradients);
* :mod:`.gradients`: the one entry point to gradients (:func:`~.gradients.gradients`);
* :mod:`.saliency`: gradient, SmoothGrad, Integrated Gradients, guided backprop;
* :mod:`.patterns`: gradient ascent on the input (the Keras example's loop, batched).
"""
