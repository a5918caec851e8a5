"""Write ``examples/regions.geojson``: 40 made-up regions over CONUS for the example pipeline.

Voronoi cells of 40 seeded random points, clipped to the CONUS box (-124.85, 24.39, -66.88,
49.39), so the regions are irregular polygons of different sizes that tile the box; three
are made harder on purpose: one with a hole (a "lake" that belongs to no region), one a
multipolygon (its cell plus an "island" cut out of its neighbour) and one with a jagged
edge. Deterministic: the same file on every run (fixed seed, coordinates on a 0.001-degree
grid). Each feature has ``region_id`` (R01..R40) and ``name``.

Run: ``python examples/make_regions.py [OUT.geojson]``
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import shapely
from shapely.geometry import MultiPoint, Point, Polygon, box, mapping

CONUS = (-124.85, 24.39, -66.88, 49.39)
SEED = 20261206
N = 40


def regions() -> list[dict]:
    rng = np.random.default_rng(SEED)
    w, s, e, n = CONUS
    points = np.column_stack([rng.uniform(w, e, N), rng.uniform(s, n, N)])
    # west to east, then south to north: stable ids that read like a map
    points = points[np.lexsort((points[:, 1], np.round(points[:, 0] / 5)))]
    frame = box(*CONUS)
    cells = shapely.voronoi_polygons(MultiPoint(points), extend_to=frame.buffer(10))
    by_point = {}
    for cell in cells.geoms:
        for k, p in enumerate(points):
            if cell.contains(Point(p)):
                by_point[k] = cell.intersection(frame)
    geoms = [by_point[k] for k in range(N)]

    # a lake: a hole in region 7 that no region covers
    c = geoms[6].representative_point()
    geoms[6] = geoms[6].difference(Point(c.x, c.y).buffer(0.8, quad_segs=8))
    # an island: a piece of region 21 given to region 20 (a multipolygon)
    c = geoms[20].representative_point()
    island = Point(c.x, c.y).buffer(0.6, quad_segs=4)
    geoms[20] = geoms[20].difference(island)
    geoms[19] = geoms[19].union(island)
    # a jagged edge: region 31 bites saw teeth into its neighbours
    c = geoms[30].centroid
    teeth = Polygon([(c.x - 3 + 0.5 * i, c.y + (1.5 if i % 2 else -1.5)) for i in range(13)]
                    + [(c.x + 3, c.y - 2.5), (c.x - 3, c.y - 2.5)])
    teeth = teeth.intersection(frame)
    for k in range(N):
        if k != 30:
            geoms[k] = geoms[k].difference(teeth)
    geoms[30] = geoms[30].union(teeth)

    features = []
    for k, g in enumerate(geoms):
        g = shapely.make_valid(shapely.set_precision(g, 0.001))
        if g.geom_type == "GeometryCollection":  # keep the areal parts only
            g = shapely.union_all([p for p in g.geoms if p.area > 0])
        features.append({"type": "Feature",
                         "properties": {"region_id": f"R{k + 1:02d}",
                                        "name": f"Region {k + 1}"},
                         "geometry": mapping(g)})
    return features


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    out = Path(args[0]) if args else Path(__file__).with_name("regions.geojson")
    doc = {"type": "FeatureCollection", "name": "regions",
           "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:OGC:1.3:CRS84"}},
           "features": regions()}
    out.write_text(json.dumps(doc, separators=(",", ":")) + "\n")
    print(f"wrote {out}: {len(doc['features'])} regions")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
