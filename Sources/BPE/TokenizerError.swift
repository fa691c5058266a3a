/// What went wrong loading or using a tokenizer; each message names the file, line, id or
/// byte offset at fault.
public struct TokenizerError: Error, CustomStringConvertible, Sendable, Equatable {
    public let description: String

    public init(_ description: String) { self.description = description }
}
