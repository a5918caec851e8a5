"""Analyses on zarrport's archives, lazy and on Dask: rolling climate normals
(:mod:`zarrport.analysis.normals`), exact area-weighted regional means
(:mod:`zarrport.analysis.regions`); the cluster they run on is :mod:`zarrport.analysis.cluster`,
named boxes are :mod:`zarrport.analysis.presets`."""
