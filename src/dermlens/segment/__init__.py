"""Tissue-fraction segmentation: for every pixel, the fraction of its area that is lesion (or tumour).

A binary segmenter calls each pixel lesion or not; at an edge a pixel is partly both, and on a coarse grid (PET's
4 mm voxels, a downscaled dermoscopy image) edge pixels are a large share of a small lesion. Liu, Jha et al.
(Phys. Med. Biol. 66:124002, 2021) estimate instead the posterior mean of the tissue fraction, trained with a
soft-label cross-entropy whose minimiser is exactly that mean. This package holds:

- ``targets``       area-fraction targets from a mask at a finer grid (not nearest-neighbour binarisation)
- ``losses``        soft-label cross-entropy (fraction) and its binarised counterpart (binary U-Net baseline)
- ``metrics``       Jaccard, ISIC thresholded Jaccard, fuzzy Dice, area error
- ``measurements``  area, longest diameter and asymmetry of a lesion from its fraction map
- ``segmenter``     the dermoscopy model: save/load (safetensors + JSON), predict at the input image's size
- ``training``      training the dermoscopy segmenter on image/mask pairs, with checkpoints and resume
- ``evaluation``    Jaccard figures of a segmenter on a dataset with masks; ``figures`` the bundled one's record
  (weights/segmenter/figures.json) and the check against it

The U-Nets are in ``dermlens.models.segmentation``; the PET study that borrows this maths is ``dermlens.pet``.
"""
