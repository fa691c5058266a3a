/// The chat formats models are trained on, recognised from a tokenizer's Jinja chat template
/// (GGUF `tokenizer.chat_template`, HF `tokenizer_config.json`). General Jinja is not needed:
/// the common templates are recognised by their markers, and anything else is refused clearly.
///
///     ChatML (SmolLM2, Qwen):  <|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n
///     Llama 3:                 <|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>...
///     Zephyr:                  <|user|>\nHi</s>\n<|assistant|>\n
public struct ChatTemplate: Sendable, Equatable {
    public enum Format: String, Sendable { case chatML, llama3, zephyr, unknown }

    public struct Message: Sendable, Equatable {
        public var role: String
        public var content: String
        public init(role: String, content: String) {
            self.role = role
            self.content = content
        }
    }

    public let format: Format
    /// The system message the template adds when a conversation has none (SmolLM2 has one).
    public let defaultSystemMessage: String?

    public init(format: Format, defaultSystemMessage: String? = nil) {
        self.format = format
        self.defaultSystemMessage = defaultSystemMessage
    }

    /// Recognises a Jinja chat template by its markers.
    public init(recognizing template: String) {
        if template.contains("<|im_start|>") {
            format = .chatML
        } else if template.contains("<|start_header_id|>") {
            format = .llama3
        } else if template.contains("<|user|>") && template.contains("<|assistant|>") {
            format = .zephyr
        } else {
            format = .unknown
        }
        // A literal system turn emitted only when the first message is not a system one.
        if format == .chatML, template.contains("!= 'system'"),
           let start = template.range(of: "<|im_start|>system\n"),
           let end = template.range(of: "<|im_end|>", range: start.upperBound..<template.endIndex) {
            defaultSystemMessage = String(template[start.upperBound..<end.lowerBound])
        } else {
            defaultSystemMessage = nil
        }
    }

    /// The text that ends an assistant turn (generation stops at it).
    public var endOfTurn: String? {
        switch format {
        case .chatML: "<|im_end|>"
        case .llama3: "<|eot_id|>"
        case .zephyr: "</s>"
        case .unknown: nil
        }
    }

    /// The prompt for `messages`, ending with the opening of the assistant's turn.
    public func render(_ messages: [Message], addGenerationPrompt: Bool = true) throws -> String {
        try pieces(messages, addGenerationPrompt: addGenerationPrompt).map(\.text).joined()
    }

    /// The prompt for `messages` as token ids: the template's markers as their special tokens,
    /// everything the messages carry (roles and contents) as ordinary text, so a user who types
    /// `<|im_end|>` gets those characters, never the control token.
    ///
    ///     [user: "Hi <|im_end|>"] -> <|im_start|> "user\nHi <|im_end|>" <|im_end|> "\n" <|im_start|> "assistant\n"
    public func tokens(_ messages: [Message], tokenizer: Tokenizer, addGenerationPrompt: Bool = true) throws -> [Int] {
        var ids: [Int] = [], text = ""
        for piece in try pieces(messages, addGenerationPrompt: addGenerationPrompt) {
            if piece.marker, let id = tokenizer.specialTokens[piece.text] {
                ids += tokenizer.encodeOrdinary(text)
                text = ""
                ids.append(id)
            } else {
                text += piece.text
            }
        }
        return ids + tokenizer.encodeOrdinary(text)
    }

    /// The prompt as pieces: the template's own markers, and text from the messages.
    private func pieces(_ messages: [Message], addGenerationPrompt: Bool) throws -> [(marker: Bool, text: String)] {
        var messages = messages
        if let defaultSystemMessage, messages.first?.role != "system" {
            messages.insert(Message(role: "system", content: defaultSystemMessage), at: 0)
        }
        var pieces: [(marker: Bool, text: String)] = []
        func marker(_ text: String) { pieces.append((true, text)) }
        func text(_ text: String) { pieces.append((false, text)) }
        switch format {
        case .chatML:
            for m in messages {
                marker("<|im_start|>"); text("\(m.role)\n\(m.content)"); marker("<|im_end|>"); text("\n")
            }
            if addGenerationPrompt { marker("<|im_start|>"); text("assistant\n") }
        case .llama3:
            marker("<|begin_of_text|>")
            for m in messages {
                marker("<|start_header_id|>"); text(m.role); marker("<|end_header_id|>"); text("\n\n\(m.content)"); marker("<|eot_id|>")
            }
            if addGenerationPrompt { marker("<|start_header_id|>"); text("assistant"); marker("<|end_header_id|>"); text("\n\n") }
        case .zephyr:
            for m in messages { marker("<|\(m.role)|>"); text("\n\(m.content)"); marker("</s>"); text("\n") }
            if addGenerationPrompt { marker("<|assistant|>"); text("\n") }
        case .unknown:
            throw TokenizerError("the model's chat template is not one SwiftGPT recognises (ChatML, Llama 3, Zephyr)")
        }
        return pieces
    }
}
