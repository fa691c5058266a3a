import XCTest
@testable import BPE

final class ByteEncoderTests: XCTestCase {
    func testKnownGPT2Characters() {
        // From GPT-2's vocab.json: "Ġ" is the space, "Ċ" the newline, "ĉ" the tab.
        XCTAssertEqual(ByteEncoder.scalars[0x20], "\u{0120}")
        XCTAssertEqual(ByteEncoder.scalars[0x0A], "\u{010A}")
        XCTAssertEqual(ByteEncoder.scalars[0x09], "\u{0109}")
        XCTAssertEqual(ByteEncoder.scalars[0x00], "\u{0100}")
        XCTAssertEqual(ByteEncoder.scalars[0x41], "A")
        XCTAssertEqual(ByteEncoder.scalars[0xAD], "\u{0143}")  // soft hyphen, the last remapped
        XCTAssertEqual(ByteEncoder.encode(Array(" hello".utf8)), "\u{0120}hello")
    }

    func testTableIsABijection() {
        XCTAssertEqual(Set(ByteEncoder.scalars.map(\.value)).count, 256)
        let all = (0...255).map { UInt8($0) }
        XCTAssertEqual(ByteEncoder.decode(ByteEncoder.encode(all)), all)
        XCTAssertNil(ByteEncoder.decode("\u{4E2D}"))
    }
}
