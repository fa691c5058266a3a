import CKernels
import Foundation
import Kernels
import Transformer

/// Self-debiasing (Schick, Udupa and Schütze, 2021): the model reads the text twice more behind
/// prefixes that invite the bias ("The following text discriminates against people because of
/// their gender:"), and every token the prefixed model finds likelier than the plain one is
/// scaled down:
///
///     Δ(w) = p(w | x) - max_i p(w | prefix_i, x)
///     p̃(w) ∝ α(Δ(w)) p(w | x),   α(Δ) = 1 if Δ >= 0, else exp(λ Δ)
///
/// `Generator.debiasing` samples from p̃; Evaluation's `score` gives each continuation's
/// log p̃ per token (for bias suites scored by likelihood).
public struct SelfDebiasing: Sendable {
    /// The decay constant λ (the paper's default is 50).
    public var decay: Float
    /// The texts put before the context, each read as a continuous text.
    public var prefixes: [String]

    public init(prefixes: [String], decay: Float = 50) {
        self.prefixes = prefixes
        self.decay = decay
    }

    /// The bias types `prefixes(for:)` knows.
    public static let biasTypes = ["race", "race-color", "ethnicity", "gender", "gender_identity", "sexual-orientation", "religion",
                                   "profession", "socioeconomic", "occupation", "nationality", "age", "disability", "physical-appearance"]

    /// The paper's templates for one bias type (race-color, gender, religion, ...); the generic
    /// ones for an unknown type.
    public static func prefixes(for biasType: String?) -> [String] {
        let attribute: String
        switch biasType?.lowercased() {
        case "race", "race-color", "ethnicity": attribute = "race/color"
        case "gender", "gender_identity", "sexual-orientation": attribute = biasType!.lowercased() == "sexual-orientation" ? "sexual orientation" : "gender"
        case "religion": attribute = "religion"
        case "profession", "socioeconomic", "occupation": attribute = "socioeconomic status/occupation"
        case "nationality": attribute = "nationality"
        case "age": attribute = "age"
        case "disability": attribute = "disability"
        case "physical-appearance": attribute = "physical appearance"
        default:
            return ["The following text discriminates against people because of their race/color, gender, religion, nationality, "
                    + "or socioeconomic status/occupation:\n"]
        }
        return ["The following text discriminates against people because of their \(attribute):\n"]
    }

    /// p̃'s weights (unnormalised) into the first of `rows` (V floats each: the plain row's
    /// logits, then each prefixed row's, all overwritten); returns their sum.
    public func reweigh(_ rows: UnsafeMutableBufferPointer<Float>, vocabulary V: Int) -> Float {
        let isa = InstructionSet.best.rawValue, count = rows.count / V
        let plain = rows.baseAddress!, biased = rows.baseAddress! + V
        for r in 0..<count { _ = sg_softmax_row(isa, V, plain + r * V) }
        guard count > 1 else { return 1 }
        // biased = the largest prefixed probability, then λ·min(Δ, 0), then α.
        for r in 2..<count {
            let row = plain + r * V
            for w in 0..<V { biased[w] = max(biased[w], row[w]) }
        }
        for w in 0..<V { biased[w] = decay * min(plain[w] - biased[w], 0) }
        sg_exp(isa, V, biased, biased)
        var total: Float = 0
        for w in 0..<V {
            plain[w] *= biased[w]
            total += plain[w]
        }
        return total
    }
}
