"""What the stages that train or run networks share: weights resolution and digests
(:mod:`fusion.nets.weights`) and the one training loop (:mod:`fusion.nets.loop`)."""
