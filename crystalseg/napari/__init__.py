"""The napari plugin: open a run store in napari, measure it, correct a mask frame.

Registered by the npe2 manifest ``crystalseg/napari.yaml`` (entry point
``napari.manifest``), installed with ``pip install 'crystalseg[napari]'``.
:mod:`crystalseg.napari.reader` turns a run store into layer data without importing
napari; :mod:`crystalseg.napari.widget` is the dock widget (needs napari and Qt).
"""
