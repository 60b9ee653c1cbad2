"""Tissue fractions in PET: a 2-D simulator after Liu, Jha et al. (Phys. Med. Biol. 66:124002, 2021), the
small U-Net trained on it with the soft-label cross-entropy (or, as a baseline, on binarised masks), and the
comparison with a 40%-of-maximum threshold.

- ``shapes``      elliptic-Fourier-descriptor tumour outlines
- ``phantom``     body/organ backgrounds and heterogeneous tumours on the fine grid
- ``scanner``     PSF blur, Poisson counts, sparse parallel-beam projector and OSEM
- ``simulator``   SimulatorConfig and one image (or a batch) from a seed; ``dataset`` writes/reads folders of them
- ``training``    train_pet, load_pet_model, predict_fractions
- ``baselines``   the tumour box and the 40% threshold
- ``evaluation``  evaluate_pet: metrics.json with bootstrap CIs, by tumour size and dose; ``report`` its HTML
- ``study``       simulate + train both + evaluate in one call
- ``bundled``     the small fraction and binary networks shipped in ``weights/pet/``, evaluated on a new test set
- ``figures``     their documented figures (``weights/pet/figures.json``) and the check against them and the claim

The ``dermlens pet`` commands are in ``dermlens.cli.pet``.
"""
