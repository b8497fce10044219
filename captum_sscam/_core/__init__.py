"""The private core below the methods and the metrics.

Everything here is shared by ``captum_sscam.attr`` (the Score-CAM family) and
``captum_sscam.metrics`` (and drawn on by ``captum_sscam.visualization``):

- ``scorer``: the one batched scoring loop (``BatchScorer``) with its memory-format
  calibration, score selection and the rule that tensor forward arguments follow
  their example;
- ``targets``: every Captum target form as flat indices into the model's output;
- ``checks``: argument checks (inputs, baselines, integers, choices, flags);
- ``resize``: the package's one resize and min-max scaling;
- ``model_state``: the model in eval mode and one call at a time per model;
- ``batch_size``: the default number of inputs per forward;
- ``hardware``: what the machine computes fast (bf16 units, GPU generation);
- ``malloc``: glibc's malloc settings that keep batches from page-faulting.

The core imports nothing from ``attr``, ``metrics`` or the applications.
"""
