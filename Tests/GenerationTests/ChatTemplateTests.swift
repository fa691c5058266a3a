import XCTest
import BPE

final class ChatTemplateTests: XCTestCase {
    let smolTemplate = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"

    func testChatMLWithTheTemplatesDefaultSystemMessage() throws {
        let template = ChatTemplate(recognizing: smolTemplate)
        XCTAssertEqual(template.format, .chatML)
        XCTAssertEqual(template.defaultSystemMessage, "You are a helpful AI assistant named SmolLM, trained by Hugging Face")
        XCTAssertEqual(try template.render([.init(role: "user", content: "Hi")]),
                       "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
        XCTAssertEqual(try template.render([.init(role: "system", content: "Be brief."), .init(role: "user", content: "Hi")]),
                       "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
        XCTAssertEqual(template.endOfTurn, "<|im_end|>")
    }

    func testOtherFormatsAndUnknown() throws {
        let llama = ChatTemplate(recognizing: "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' }}")
        XCTAssertEqual(try llama.render([.init(role: "user", content: "Hi")]),
                       "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n")
        let zephyr = ChatTemplate(recognizing: "{{ '<|user|>\n' }}{{ '<|assistant|>\n' }}")
        XCTAssertEqual(try zephyr.render([.init(role: "user", content: "Hi")]), "<|user|>\nHi</s>\n<|assistant|>\n")
        let unknown = ChatTemplate(recognizing: "{{ messages }}")
        XCTAssertEqual(unknown.format, .unknown)
        XCTAssertThrowsError(try unknown.render([.init(role: "user", content: "Hi")])) {
            XCTAssertTrue("\($0)".contains("not one SwiftGPT recognises"), "\($0)")
        }
    }
}
