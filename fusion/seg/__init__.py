"""Segmentation models as ROI generators: U-Net training (:mod:`fusion.seg.train`),
sliding-window prediction (:mod:`fusion.seg.infer`) and the study stage that trains,
predicts and evaluates them (:mod:`fusion.seg.stage`)."""
