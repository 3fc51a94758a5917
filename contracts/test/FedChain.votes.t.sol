// SPDX-License-Identifier: Apache-2.0
pragma solidity >=0.8.24 <0.9.0;

import {FedChain} from "../FedChain.sol";

/// @dev The forge cheatcodes used here (forge-std is not vendored: `forge test` runs offline).
interface VoteVm {
    function prank(address sender) external;
    function roll(uint256 blockNumber) external;
}

VoteVm constant VVM = VoteVm(address(uint160(uint256(keccak256("hevm cheat code")))));

/// @notice Vote timing: whether a vote was among those that finalized the round is a race (a
/// colluding team wins it by voting first), so it must not pay. An agreeing vote that lands after
/// finalization but while the next round's submission window is open earns AGREEMENT_REWARD, like
/// the deciding votes; only one after that window earns LATE_AGREEMENT_REWARD; dissent is halved.
contract FedChainVoteTimingTest {
    uint32 internal constant SUBMIT = 10;
    uint32 internal constant VOTE = 10;
    FedChain internal chain;
    address[] internal members;
    uint256 internal start;

    function setUp() public {
        for (uint256 i = 0; i < 3; ++i) {
            members.push(address(uint160(0x4000 + i)));
        }
        start = block.number;
        chain = new FedChain(
            FedChain.Config(members, keccak256("model"), keccak256("task"), SUBMIT, VOTE, 2, 3, 5, 0, 0, 0)
        );
    }

    function _vote(uint256 i, uint256 round, bytes32 model, FedChain.Outcome memory previous) internal {
        VVM.prank(members[i]);
        chain.vote(round, model, 7, previous);
    }

    function _reputation(uint256 i) internal view returns (uint256 rep) {
        (, rep,,,) = chain.memberInfo(members[i]);
    }

    /// @dev Round 1 (no submissions): members 0 and 1 finalize "m" at `start + SUBMIT`, which opens
    /// round 2 in the same block.
    function _finalizeRoundOne() internal returns (FedChain.Outcome memory winner) {
        VVM.roll(start + SUBMIT);
        _vote(0, 1, "m", FedChain.Outcome(bytes32(0), 0));
        _vote(1, 1, "m", FedChain.Outcome(bytes32(0), 0));
        require(chain.isOutcome(1, "m", 7), "finalized by two of three");
        winner = FedChain.Outcome("m", 7);
    }

    function testFuzz_lateAgreementPaysInFullInsideTheNextSubmissionWindow(uint256 delay, bool settledFirst) public {
        FedChain.Outcome memory winner = _finalizeRoundOne();
        uint256 roundTwo = start + SUBMIT; // round 2 started with the deciding vote
        delay = delay % (SUBMIT + VOTE); // round 2 is still open: the late vote is taken
        if (settledFirst) chain.settle(members[2], winner); // nothing to settle yet: no change
        VVM.roll(roundTwo + delay);
        _vote(2, 1, "m", FedChain.Outcome(bytes32(0), 0));
        chain.settle(members[0], winner);
        chain.settle(members[2], winner);
        uint256 expected = 1000 + (delay < SUBMIT ? chain.AGREEMENT_REWARD() : chain.LATE_AGREEMENT_REWARD());
        require(_reputation(2) == expected, "late agreement reward");
        require(_reputation(0) == 1000 + chain.AGREEMENT_REWARD(), "deciding vote reward");
        if (delay < SUBMIT) require(_reputation(2) == _reputation(0), "in time: the same as a deciding vote");
    }

    function testFuzz_lateDissentIsHalvedWhenever(uint256 delay) public {
        FedChain.Outcome memory winner = _finalizeRoundOne();
        delay = delay % (SUBMIT + VOTE);
        VVM.roll(start + SUBMIT + delay);
        _vote(2, 1, "other", FedChain.Outcome(bytes32(0), 0));
        chain.settle(members[2], winner);
        require(_reputation(2) == 500, "dissent halved");
    }
}
