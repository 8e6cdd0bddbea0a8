"""Person detection behind one small interface (see diffpose.detect.base.Detector).

Backends (diffpose.detect.backends.BACKENDS): ``precomputed`` (DCPose/PoseWarper boxes or COCO
results), ``hog`` (OpenCV's pretrained people detector), ``synthetic`` (a small CenterNet trained
on the synthetic benchmark), ``torchvision`` (optional extra: Faster R-CNN from a local file).
"""
