"""Image classifiers on 2D radiographs: torchvision CNNs fine-tuned for one logit.

``network`` builds ResNet-50 / DenseNet-121 with a one-logit head and the freezing
policy, ``data`` turns radiographs into fixed-size tensors and augments training
batches, ``train`` is the resumable training loop, ``gradcam`` the class-activation
maps, ``stage`` the study stage (splits, training, scores, Grad-CAM tables). The same
network and loop fine-tune the deep-feature stage's ResNet50 on CT crops
(``deep.weights: finetune``).
"""
