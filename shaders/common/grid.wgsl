// Flat workgroup index: large 1-D grids are split over x and z (x <= 65535), see plan::Grid::Flat.
fn flat_group(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.x + wid.z * nwg.x;
}
