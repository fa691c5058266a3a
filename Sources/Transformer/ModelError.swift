/// What went wrong loading, checking or saving a model; each message names the file, tensor or
/// value at fault.
public struct ModelError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}
