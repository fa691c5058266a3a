/// The Unicode classes the pre-tokenizer patterns test, as bit flags per scalar.
///
/// `\p{L}`, `\p{N}`, `\s` (White_Space) and the two letter-case classes of o200k's pattern:
/// `[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]` ("upper-ish") and `[\p{Ll}\p{Lm}\p{Lo}\p{M}]` ("lower-ish").
/// The Basic Multilingual Plane is looked up in a 64K-entry table built once; other planes ask
/// Swift's Unicode properties directly.
struct CharacterClasses: OptionSet, Sendable {
    let rawValue: UInt8

    static let letter = CharacterClasses(rawValue: 1)
    static let number = CharacterClasses(rawValue: 2)
    static let whitespace = CharacterClasses(rawValue: 4)
    static let upperish = CharacterClasses(rawValue: 8)
    static let lowerish = CharacterClasses(rawValue: 16)
    static let mark = CharacterClasses(rawValue: 32)
    /// \r or \n.
    static let newline = CharacterClasses(rawValue: 64)

    static func of(_ value: UInt32) -> CharacterClasses {
        if value < 0x10000 { return CharacterClasses(rawValue: bmpTable[Int(value)]) }
        return compute(value)
    }

    /// The classes of U+0000...U+FFFF, built once and never freed (the scanner keeps the pointer).
    nonisolated(unsafe) static let bmpTable: UnsafePointer<UInt8> = {
        let table = UnsafeMutablePointer<UInt8>.allocate(capacity: 0x10000)
        for value in 0..<0x10000 { table[value] = compute(UInt32(value)).rawValue }
        return UnsafePointer(table)
    }()

    /// Never inlined: Unicode.Scalar.Properties needs a dynamically sized stack frame, which
    /// inlined into the scanner was set up on every call (9% of the scanner's time).
    @inline(never)
    private static func compute(_ value: UInt32) -> CharacterClasses {
        guard let scalar = Unicode.Scalar(value) else { return [] }  // surrogates
        var classes: CharacterClasses = []
        let properties = scalar.properties
        if properties.isWhitespace { classes.insert(.whitespace) }
        if value == 0x0A || value == 0x0D { classes.insert(.newline) }
        switch properties.generalCategory {
        case .uppercaseLetter, .titlecaseLetter:
            classes.formUnion([.letter, .upperish])
        case .lowercaseLetter:
            classes.formUnion([.letter, .lowerish])
        case .modifierLetter, .otherLetter:
            classes.formUnion([.letter, .upperish, .lowerish])
        case .nonspacingMark, .spacingMark, .enclosingMark:
            classes.formUnion([.mark, .upperish, .lowerish])
        case .decimalNumber, .letterNumber, .otherNumber:
            classes.insert(.number)
        default:
            break
        }
        return classes
    }
}

extension PreTokenizer {
    /// Builds the character-class table that splitting reads (4 ms, once a process) now, for
    /// example on another thread while a tokenizer loads, instead of at the first encode.
    public static func prepareTables() { _ = CharacterClasses.bmpTable }
}
