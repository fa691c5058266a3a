// SwiftGPT: one import for the whole library. See README.md for the commands.
@_exported import BPE
@_exported import Evaluation
@_exported import Generation
@_exported import Kernels
@_exported import Server
@_exported import Training
@_exported import Transformer

/// The version `gpt --version` prints.
public let swiftGPTVersion = "0.1.0"
