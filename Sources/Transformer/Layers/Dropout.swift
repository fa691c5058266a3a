/// Dropout masks drawn from a hash of (seed, site, index): the same mask whatever the order or
/// thread that asks, so training gives the same bits at any thread count. Sites: 0 the
/// embeddings, 1 + 3l layer l's attention probabilities, 2 + 3l its attention output, 3 + 3l
/// its MLP output.
struct Dropout {
    let probability: Float
    let seed: UInt64

    /// 0 or 1/(1-p) for element `index` of site `site`.
    @inline(__always)
    func scale(site: Int, index: Int) -> Float {
        var z = seed &+ UInt64(site) &* 0x9E37_79B9_7F4A_7C15 &+ UInt64(index) &* 0xD1B5_4A32_D192_ED03
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        z ^= z >> 31
        let u = Float(z >> 40) * (1.0 / 16_777_216.0)
        return u < probability ? 0 : 1 / (1 - probability)
    }
}
