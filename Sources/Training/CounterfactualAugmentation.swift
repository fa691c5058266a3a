/// Counterfactual data augmentation (Lu et al. 2018; Zmigrod et al. 2019): a mirrored copy of
/// each example with gendered words and first names swapped, so that fine-tuning sees both
/// versions equally often. Words are matched whole and case-insensitively; the swap keeps the
/// word's case:
///
///     "He thanked his wife, Mary."  ->  "She thanked her husband, John."
///     "THE KING"                    ->  "THE QUEEN"
///
/// "her" is ambiguous (him / his); it becomes "his", the more frequent reading in text about a
/// person's belongings, and a known limit of word-list augmentation.
public enum CounterfactualAugmentation {
    /// (masculine, feminine) word pairs, then first-name pairs, all lowercase.
    public static let pairs: [(String, String)] = [
        ("he", "she"), ("him", "her"), ("his", "her"), ("himself", "herself"), ("man", "woman"), ("men", "women"),
        ("boy", "girl"), ("boys", "girls"), ("father", "mother"), ("fathers", "mothers"), ("son", "daughter"),
        ("sons", "daughters"), ("brother", "sister"), ("brothers", "sisters"), ("husband", "wife"), ("husbands", "wives"),
        ("king", "queen"), ("kings", "queens"), ("male", "female"), ("males", "females"), ("mr", "mrs"), ("sir", "madam"),
        ("uncle", "aunt"), ("uncles", "aunts"), ("nephew", "niece"), ("nephews", "nieces"), ("lord", "lady"), ("gentleman", "lady"),
        ("gentlemen", "ladies"), ("dad", "mom"), ("dads", "moms"), ("grandfather", "grandmother"), ("grandson", "granddaughter"),
        ("boyfriend", "girlfriend"), ("actor", "actress"), ("actors", "actresses"), ("waiter", "waitress"),
        ("prince", "princess"), ("masculine", "feminine"), ("fiance", "fiancee"), ("groom", "bride"),
        ("john", "mary"), ("james", "jennifer"), ("michael", "linda"), ("david", "susan"), ("robert", "patricia"),
        ("william", "elizabeth"), ("thomas", "sarah"), ("daniel", "jessica"), ("paul", "karen"), ("mark", "nancy"),
        ("peter", "emma"), ("tom", "anna"), ("jack", "emily"), ("george", "lucy"),
    ]

    /// Each word's counterpart both ways; where a word has two counterparts, the last pair listed
    /// wins ("her" -> "his", "lady" -> "gentleman").
    static let swaps: [String: String] = {
        var map: [String: String] = [:]
        for (masculine, feminine) in pairs {
            if map[masculine] == nil { map[masculine] = feminine }
            map[feminine] = masculine
        }
        return map
    }()

    /// `text` with every listed word swapped for its counterpart, case kept.
    public static func swap(_ text: String) -> String {
        var result = "", word = ""
        func flush() {
            guard !word.isEmpty else { return }
            if let other = swaps[word.lowercased()] { result += matchingCase(other, of: word) } else { result += word }
            word = ""
        }
        for character in text {
            if character.isLetter { word.append(character) } else { flush(); result.append(character) }
        }
        flush()
        return result
    }

    /// `replacement` in the case pattern of `original`: "HE" -> "SHE", "He" -> "She", "he" -> "she".
    static func matchingCase(_ replacement: String, of original: String) -> String {
        if original.count > 1 && original == original.uppercased() { return replacement.uppercased() }
        if original.first?.isUppercase == true { return replacement.prefix(1).uppercased() + replacement.dropFirst() }
        return replacement
    }
}
