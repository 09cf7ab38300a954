"""Images: the :class:`~seqpatch_core.images.volume.Volume` type, reading and writing files, windows.

``volume`` (the (z, y, x) array with its spacing, origin and direction; validation; the CT rule),
``formats`` (the suffixes read and written, without a reader), ``io`` (NIfTI, MetaImage, NRRD, DICOM
series and zips, pictures, with size caps; masks written in the input's geometry) and ``intensity``
(display windows, which are also what the networks see). Imports :mod:`seqpatch_core.base` only.
SimpleITK is imported where geometry is converted, so the layers above can use ``Volume`` and the
windows on machines without it.
"""
