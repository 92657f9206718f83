"""What every training loop runs on, below the steps that train: the precision chosen for
the hardware (``precision``), the Lightning ``Trainer`` (``trainer``), gathering across
processes (``distributed``), per-step learning-rate factors (``schedule``) and the frames'
conversion to network input (``inputs``).

Pretraining (``awcl.train``), its methods (``awcl.methods``), the downstream runs
(``awcl.evaluate``) and the study's planner import it; it imports none of them.
"""
